//! Offer propagation, driven by the market actor: listening on the offer
//! topics of the subnets we care about (each broadcast reaches the actor as a
//! stream message), broadcasting our offers (at once and on the actor's
//! announcement timer, since a publish fails while the mesh has no peers yet),
//! and asking peers for theirs the first time they connect (not again on
//! every reconnect: DHT walks connect the same peers again and again).
//! Every network call runs in a
//! future that does not borrow the state; what it brings back is applied by
//! the actor.

use std::collections::{HashMap, HashSet};

use actix::{ActorFutureExt, AsyncContext, Context, StreamHandler};
use golem_model::market::{offers_topic, GetOwnOffers, OfferBroadcast};
use golem_model::NodeId;
use golem_net::Broadcast;

use super::actor::MarketActor;
use super::matching::{ingest_offers, interesting_subnets, own_offers};
use super::records::subnet_of;

impl MarketActor {
    /// Listen on every subnet of our live offers and demands (at start).
    pub(crate) fn listen_to_interesting_subnets(&mut self, ctx: &mut Context<Self>) {
        for subnet in interesting_subnets(&self.state) {
            let listen = self.listen(subnet);
            ctx.spawn(listen.map(|_, _, _| ()));
        }
    }

    /// Listen on the offer topic of `subnet`; resolves to true when we were
    /// not listening yet.
    pub(crate) fn listen(
        &mut self,
        subnet: Option<String>,
    ) -> impl actix::ActorFuture<Self, Output = bool> + 'static {
        let new_topic = self.topics.insert(subnet.clone());
        let net = self.core.net.clone();
        let topic = offers_topic(subnet.as_deref());
        actix::fut::wrap_future(async move {
            if new_topic {
                Some(
                    net.subscribe(&topic)
                        .await
                        .map(|receiver| (topic, receiver)),
                )
            } else {
                None
            }
        })
        .map(
            move |subscribed, actor: &mut MarketActor, ctx| match subscribed {
                None => false,
                Some(Ok((topic, receiver))) => {
                    let broadcasts = futures::stream::unfold(receiver, |mut receiver| async move {
                        receiver.recv().await.map(|broadcast| (broadcast, receiver))
                    });
                    ctx.add_stream(broadcasts);
                    tracing::debug!(%topic, "listening for offers");
                    true
                }
                Some(Err(error)) => {
                    tracing::warn!(?subnet, %error, "cannot listen for offers");
                    actor.topics.remove(&subnet);
                    false
                }
            },
        )
    }

    /// Broadcast our offers (only those of subnet `only` and only offer
    /// `offer_id` when given) in the background. One offer at a time when it
    /// is subscribed: the periodic announcement carries the rest, so
    /// subscribing n offers costs n small broadcasts, not n² offers.
    pub(crate) fn announce(
        &mut self,
        ctx: &mut Context<Self>,
        only: Option<&Option<String>>,
        offer_id: Option<&str>,
    ) {
        let broadcasts = self.broadcasts(only, offer_id);
        if broadcasts.is_empty() {
            return;
        }
        let net = self.core.net.clone();
        let sent = async move {
            let mut all_sent = true;
            for (subnet, broadcast) in broadcasts {
                let topic = offers_topic(subnet.as_deref());
                let payload = match serde_json::to_vec(&broadcast) {
                    Ok(payload) => payload,
                    Err(error) => {
                        tracing::warn!(%error, "cannot encode the offer broadcast");
                        continue;
                    }
                };
                if let Err(error) = net.publish(&topic, payload).await {
                    // Normal while no peer listens on the topic yet.
                    tracing::debug!(%topic, %error, "offer broadcast not sent");
                    all_sent = false;
                }
            }
            all_sent
        };
        ctx.spawn(
            actix::fut::wrap_future(sent).map(|all_sent, actor: &mut MarketActor, ctx| {
                if all_sent {
                    actor.announce_failures = 0;
                } else {
                    actor.retry_announcement(ctx);
                }
            }),
        );
    }

    /// An announcement found no peer on its topic (the node has just
    /// started, or lost its peers): announce everything again soon, after
    /// 1 s, 2 s, 4 s ... up to the announcement period, instead of waiting a
    /// whole period.
    fn retry_announcement(&mut self, ctx: &mut Context<Self>) {
        if self.announce_retry.is_some() {
            return;
        }
        let delay =
            announce_retry_delay(self.announce_failures, self.core.config.announce_interval);
        self.announce_failures = self.announce_failures.saturating_add(1);
        self.announce_retry = Some(ctx.run_later(delay, |actor, ctx| {
            actor.announce_retry = None;
            actor.announce(ctx, None, None);
        }));
    }

    /// Our offers to broadcast, by subnet.
    fn broadcasts(
        &self,
        only: Option<&Option<String>>,
        offer_id: Option<&str>,
    ) -> HashMap<Option<String>, OfferBroadcast> {
        let own = own_offers(&self.state, only, offer_id);
        let mut by_subnet: HashMap<Option<String>, OfferBroadcast> = HashMap::new();
        for published in own.offers {
            let subnet = subnet_of(&published.offer.properties);
            by_subnet
                .entry(subnet)
                .or_insert_with(empty_broadcast)
                .offers
                .push(published);
        }
        if let Some(subnet) = only {
            // Unsubscriptions carry no properties; send them on the subnet asked for.
            if !own.unsubscribed.is_empty() {
                by_subnet
                    .entry(subnet.clone())
                    .or_insert_with(empty_broadcast)
                    .unsubscribed = own.unsubscribed;
            }
        } else {
            for unsubscribed in own.unsubscribed {
                let subnet = self
                    .state
                    .offers
                    .get(&unsubscribed.offer_id)
                    .and_then(|entry| entry.subnet.clone());
                by_subnet
                    .entry(subnet)
                    .or_insert_with(empty_broadcast)
                    .unsubscribed
                    .push(unsubscribed);
            }
        }
        by_subnet
    }

    /// Take in offers of `origin` (a broadcast or a peer's answer).
    pub(crate) fn take_in_offers(&mut self, origin: NodeId, broadcast: OfferBroadcast) {
        let ingested = ingest_offers(&self.core, &mut self.state, origin, broadcast);
        if ingested.produced {
            self.core.signals.bump_events();
        }
        if ingested.learnt {
            self.core.signals.bump_catalogue();
        }
    }

    /// Ask each newly connected peer for its offers, so a node that has just
    /// started (or a peer that has just appeared) need not wait for the next
    /// re-announcement. A peer already asked is not asked again when it
    /// reconnects ([`PulledPeers`]).
    pub(crate) fn check_peers(&mut self, ctx: &mut Context<Self>) {
        let net = self.core.net.clone();
        ctx.spawn(
            actix::fut::wrap_future(async move { connected_peers(&net).await }).map(
                |connected: HashSet<NodeId>, actor: &mut MarketActor, ctx| {
                    for peer in connected {
                        if actor.pulled.first_time(peer) {
                            actor.pull_offers_from(peer, ctx);
                        }
                    }
                },
            ),
        );
    }

    pub(crate) fn pull_offers_from_connected_peers(&mut self, ctx: &mut Context<Self>) {
        let net = self.core.net.clone();
        ctx.spawn(
            actix::fut::wrap_future(async move { connected_peers(&net).await }).map(
                |connected: HashSet<NodeId>, actor: &mut MarketActor, ctx| {
                    for peer in connected {
                        actor.pull_offers_from(peer, ctx);
                    }
                },
            ),
        );
    }

    /// One future per peer, so a slow peer delays nobody else.
    fn pull_offers_from(&mut self, peer: NodeId, ctx: &mut Context<Self>) {
        let call = self.core.call_remote(peer, GetOwnOffers {});
        ctx.spawn(actix::fut::wrap_future(call).map(
            move |answer, actor: &mut MarketActor, _ctx| match answer {
                Ok(offers) => {
                    tracing::debug!(%peer, offers = offers.offers.len(), "offers pulled from a peer");
                    actor.take_in_offers(peer, offers);
                }
                Err(error) => tracing::debug!(%peer, %error, "cannot pull offers from a peer"),
            },
        ));
    }
}

/// How many peers [`PulledPeers`] remembers; beyond that the oldest quarter
/// is forgotten (and asked again at the next check that finds them connected).
pub(crate) const PULLED_PEERS_KEPT: usize = 4096;

/// The peers already asked for their offers. A reconnect does not ask again:
/// what a known peer changes reaches the node by broadcast (at once, and again
/// every announcement period). DHT walks reconnect most of a small network
/// every few minutes; asking on each reconnect made ~90 pulls per node per
/// walk at 100 nodes, and each pull, a call, kept its connection open for the
/// net's long grace of used peers. Bounded: the oldest are forgotten first.
#[derive(Debug, Default)]
pub(crate) struct PulledPeers {
    asked: HashMap<NodeId, u64>,
    asked_so_far: u64,
}

impl PulledPeers {
    /// Whether `peer` is to be asked now (never asked, or forgotten since);
    /// if so, that is recorded.
    fn first_time(&mut self, peer: NodeId) -> bool {
        if self.asked.contains_key(&peer) {
            return false;
        }
        self.asked_so_far += 1;
        self.asked.insert(peer, self.asked_so_far);
        if self.asked.len() > PULLED_PEERS_KEPT {
            let keep_from = self.asked_so_far - (PULLED_PEERS_KEPT as u64 * 3 / 4);
            self.asked.retain(|_, order| *order > keep_from);
        }
        true
    }
}

async fn connected_peers(net: &crate::net::NetService) -> HashSet<NodeId> {
    net.connected_nodes().await.into_iter().collect()
}

/// An offer broadcast of another node, as the net delivers it.
impl StreamHandler<Broadcast> for MarketActor {
    fn handle(&mut self, broadcast: Broadcast, _ctx: &mut Context<Self>) {
        match serde_json::from_slice::<OfferBroadcast>(&broadcast.payload) {
            Ok(offers) => self.take_in_offers(broadcast.origin, offers),
            Err(error) => {
                tracing::warn!(origin = %broadcast.origin, %error, "malformed offer broadcast")
            }
        }
    }

    /// A topic's stream ends with the net: the actor lives on (the default
    /// would stop it).
    fn finished(&mut self, _ctx: &mut Context<Self>) {
        tracing::debug!("an offer topic stream ended");
    }
}

/// How long to wait before announcing again after `failures` announcements
/// in a row found no peer: 1 s doubling, never more than `period`.
fn announce_retry_delay(failures: u32, period: std::time::Duration) -> std::time::Duration {
    let first = std::time::Duration::from_secs(1);
    first
        .checked_mul(1u32 << failures.min(16))
        .unwrap_or(period)
        .min(period)
}

fn empty_broadcast() -> OfferBroadcast {
    OfferBroadcast {
        offers: Vec::new(),
        unsubscribed: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::{announce_retry_delay, PulledPeers, PULLED_PEERS_KEPT};
    use golem_model::NodeId;
    use std::time::Duration;

    #[test]
    fn a_peer_is_asked_for_its_offers_once_and_the_oldest_are_forgotten_beyond_the_bound() {
        let node = |n: u64| {
            let mut bytes = [0u8; 20];
            bytes[..8].copy_from_slice(&n.to_be_bytes());
            NodeId::from_bytes(bytes)
        };
        let mut pulled = PulledPeers::default();
        assert!(pulled.first_time(node(0)));
        // Reconnected by the next DHT walk: not asked again.
        assert!(!pulled.first_time(node(0)));
        for n in 1..PULLED_PEERS_KEPT as u64 {
            assert!(pulled.first_time(node(n)));
        }
        assert_eq!(pulled.asked.len(), PULLED_PEERS_KEPT);
        // One more: the oldest quarter is forgotten, the newest kept.
        assert!(pulled.first_time(node(PULLED_PEERS_KEPT as u64)));
        assert_eq!(pulled.asked.len(), PULLED_PEERS_KEPT * 3 / 4);
        assert!(!pulled.first_time(node(PULLED_PEERS_KEPT as u64 - 1)));
        assert!(pulled.first_time(node(0)), "the oldest was forgotten");
    }

    #[test]
    fn an_announcement_nobody_took_is_retried_after_one_second_doubling_up_to_the_period() {
        let period = Duration::from_secs(30);
        let delays: Vec<u64> = (0..7)
            .map(|failures| announce_retry_delay(failures, period).as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(announce_retry_delay(u32::MAX, period), period);
        let short = Duration::from_millis(500);
        assert_eq!(
            announce_retry_delay(0, short),
            short,
            "never beyond the period"
        );
    }
}
