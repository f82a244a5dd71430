//! Offer propagation: listening on the offer topics of the subnets we care
//! about, broadcasting our offers (at once and periodically, since a publish
//! fails while the mesh has no peers yet), asking newly connected peers for
//! theirs, and the periodic sweep of expired records.

use std::collections::HashSet;

use golem_model::market::{offers_topic, GetOwnOffers, OfferBroadcast};
use golem_model::NodeId;

use super::MarketService;

impl MarketService {
    pub(crate) async fn start_background(&self) {
        for subnet in self.interesting_subnets() {
            self.ensure_topic(subnet).await;
        }
        let service = self.clone();
        self.spawn_task(async move { service.announce_loop().await });
        let service = self.clone();
        self.spawn_task(async move { service.peer_loop().await });
        let service = self.clone();
        self.spawn_task(async move { service.sweep_loop().await });
        let service = self.clone();
        self.spawn_task(service.run_outbox());
    }

    /// Listen on the offer topic of `subnet`; true when we were not yet.
    pub(crate) async fn ensure_topic(&self, subnet: Option<String>) -> bool {
        {
            let mut topics = self
                .inner
                .topics
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if !topics.insert(subnet.clone()) {
                return false;
            }
        }
        let topic = offers_topic(subnet.as_deref());
        let mut receiver = match self.inner.net.subscribe(&topic).await {
            Ok(receiver) => receiver,
            Err(error) => {
                tracing::warn!(%topic, %error, "cannot listen for offers");
                self.inner
                    .topics
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(&subnet);
                return false;
            }
        };
        let service = self.clone();
        self.spawn_task(async move {
            while let Some(broadcast) = receiver.recv().await {
                match serde_json::from_slice::<OfferBroadcast>(&broadcast.payload) {
                    Ok(offers) => service.ingest_offers(broadcast.origin, offers),
                    Err(error) => {
                        tracing::warn!(origin = %broadcast.origin, %error, "malformed offer broadcast")
                    }
                }
            }
        });
        tracing::debug!(%topic, "listening for offers");
        true
    }

    /// Broadcast one offer of ours (or its unsubscription) on `subnet` now, in
    /// the background. Only that offer: the periodic announcement carries the
    /// rest, so subscribing n offers costs n small broadcasts, not n² offers.
    pub(crate) fn announce_offer_soon(&self, subnet: Option<String>, offer_id: String) {
        let service = self.clone();
        self.spawn_task(async move {
            service
                .announce(Some(&subnet), Some(offer_id.as_str()))
                .await;
        });
    }

    async fn announce(&self, only: Option<&Option<String>>, offer_id: Option<&str>) {
        let own = self.own_offers(only, offer_id);
        let mut by_subnet: std::collections::HashMap<Option<String>, OfferBroadcast> =
            Default::default();
        for published in own.offers {
            let subnet = super::state::subnet_of(&published.offer.properties);
            by_subnet
                .entry(subnet)
                .or_insert_with(empty_broadcast)
                .offers
                .push(published);
        }
        if let Some(subnet) = only {
            // Unsubscriptions carry no properties; send them on the subnet asked for.
            by_subnet
                .entry(subnet.clone())
                .or_insert_with(empty_broadcast)
                .unsubscribed = own.unsubscribed;
        } else if !own.unsubscribed.is_empty() {
            let state = self.inner.lock();
            for unsubscribed in own.unsubscribed {
                let subnet = state
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
        for (subnet, broadcast) in by_subnet {
            let topic = offers_topic(subnet.as_deref());
            let payload = match serde_json::to_vec(&broadcast) {
                Ok(payload) => payload,
                Err(error) => {
                    tracing::warn!(%error, "cannot encode the offer broadcast");
                    continue;
                }
            };
            if let Err(error) = self.inner.net.publish(&topic, payload).await {
                // Normal while no peer listens on the topic yet.
                tracing::debug!(%topic, %error, "offer broadcast not sent");
            }
        }
    }

    async fn announce_loop(&self) {
        let mut ticker = tokio::time::interval(self.inner.config.announce_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            self.announce(None, None).await;
        }
    }

    /// Ask each newly connected peer for its offers, so a node that has just
    /// started (or a peer that has just appeared) need not wait for the next
    /// re-announcement.
    async fn peer_loop(&self) {
        let mut known: HashSet<NodeId> = HashSet::new();
        let mut ticker = tokio::time::interval(self.inner.config.peer_check_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let connected: HashSet<NodeId> = self
                .inner
                .net
                .status()
                .await
                .connected
                .into_iter()
                .filter_map(|peer| peer.node_id)
                .collect();
            for peer in connected.difference(&known) {
                self.pull_offers_from(*peer);
            }
            known = connected;
        }
    }

    pub(crate) fn pull_offers_from_connected_peers(&self) {
        let service = self.clone();
        self.spawn_task(async move {
            let peers: Vec<NodeId> = service
                .inner
                .net
                .status()
                .await
                .connected
                .into_iter()
                .filter_map(|peer| peer.node_id)
                .collect();
            for peer in peers {
                service.pull_offers_from(peer);
            }
        });
    }

    /// One task per peer, so a slow peer delays nobody else.
    fn pull_offers_from(&self, peer: NodeId) {
        let service = self.clone();
        self.spawn_task(async move {
            match service.call_remote(peer, &GetOwnOffers {}).await {
                Ok(offers) => {
                    tracing::debug!(%peer, offers = offers.offers.len(), "offers pulled from a peer");
                    service.ingest_offers(peer, offers);
                }
                Err(error) => tracing::debug!(%peer, %error, "cannot pull offers from a peer"),
            }
        });
    }

    async fn sweep_loop(&self) {
        let mut ticker = tokio::time::interval(self.inner.config.sweep_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            self.sweep();
        }
    }
}

fn empty_broadcast() -> OfferBroadcast {
    OfferBroadcast {
        offers: Vec::new(),
        unsubscribed: Vec::new(),
    }
}
