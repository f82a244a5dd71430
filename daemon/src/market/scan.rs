//! Market scans (`/market-api/v1/scan`): read-only iterators over the market
//! for tools that want to look at it rather than negotiate. An `offer` scan
//! pages through every live offer this node knows (its own and those learnt
//! from its subnets), in the order they became known, filtered by an optional
//! constraint; once it has seen them all, `GET .../events` long-polls for
//! offers that arrive later. With `peerId` it asks that node for its own
//! offers instead (each offer once per peer). A `demand` scan pages through
//! the caller's own live demands: demands never leave their node, so there
//! are no others to see.
//!
//! Iterators live in memory only (as in the original) and belong to the
//! identity that began them; another identity gets 404. An iterator unused for
//! its `timeout` (default 300 s, the original's) expires; its id is remembered
//! for an hour so that its events answer 404 and its deletion 410, as for an
//! expired subscription. A scan never changes the market: it creates no
//! proposals and sends nothing but the `GetOwnOffers` query of `peerId`.

use std::collections::HashMap;
use std::time::Duration;

use actix::{ActorFutureExt, Context, Handler, Message, ResponseActFuture};
use golem_model::constraints::CompiledConstraint;
use golem_model::ids::new_id;
use golem_model::market::{GetOwnOffers, NewScan, OfferBroadcast, ScanType};
use golem_model::{GolemError, NodeId};

use super::actor::MarketActor;
use super::matching::own_offers;
use super::records::{now, parse_constraint};
pub use super::scan_iterators::ScanItems;
use super::scan_iterators::{ScanIterator, DEFAULT_IDLE_SECS, MAX_IDLE_SECS, MAX_LIVE_SCANS};
use super::state::State;
use super::MarketService;

/// `POST /scan`.
#[derive(Message)]
#[rtype(result = "Result<String, GolemError>")]
pub(crate) struct BeginScan {
    pub owner: NodeId,
    pub body: NewScan,
}

/// One look of `GET /scan/{id}/events`: the next up to `max` items; `hold`
/// is how long the client still waits (the iterator lives at least that long).
#[derive(Message)]
#[rtype(result = "Result<ScanItems, GolemError>")]
pub(crate) struct NextScanItems {
    pub owner: NodeId,
    pub id: String,
    pub hold: Duration,
    pub max: usize,
}

/// `GET /scan/{id}/events?peerId=`.
#[derive(Message)]
#[rtype(result = "Result<ScanItems, GolemError>")]
pub(crate) struct ScanPeer {
    pub owner: NodeId,
    pub id: String,
    pub peer: NodeId,
    pub timeout: Duration,
    pub max: usize,
}

/// `DELETE /scan/{id}`.
#[derive(Message)]
#[rtype(result = "Result<(), GolemError>")]
pub(crate) struct EndScan {
    pub owner: NodeId,
    pub id: String,
}

impl MarketService {
    /// `POST /scan`: a new iterator owned by `owner`.
    pub async fn begin_scan(&self, owner: NodeId, body: NewScan) -> Result<String, GolemError> {
        self.ask(BeginScan { owner, body }).await
    }

    /// `GET /scan/{id}/events`: the next up to `max` items; when there are
    /// none yet, waits (outside the actor) up to `timeout` for some to
    /// arrive, then `[]`.
    pub async fn collect_scan(
        &self,
        owner: NodeId,
        id: &str,
        timeout: Duration,
        max: usize,
    ) -> Result<ScanItems, GolemError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changed = self.signals.catalogue.subscribe();
        loop {
            let hold = deadline.saturating_duration_since(tokio::time::Instant::now());
            let items = self
                .look(deadline, || NextScanItems {
                    owner,
                    id: id.to_string(),
                    hold,
                    max,
                })
                .await?;
            let timed_out = hold.is_zero();
            if !items.is_empty() || max == 0 || timed_out {
                return Ok(items);
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => continue,
                // One last look, so a deletion during the wait answers 404.
                Ok(Err(_)) | Err(_) => {
                    let last = NextScanItems {
                        owner,
                        id: id.to_string(),
                        hold: Duration::ZERO,
                        max: 0,
                    };
                    return self.ask(last).await;
                }
            }
        }
    }

    /// `GET /scan/{id}/events?peerId=`: offers asked of `peer` directly, each
    /// once per iterator; the fetch is bounded by `timeout` (or the remote
    /// call timeout when it is 0).
    pub async fn collect_scan_from_peer(
        &self,
        owner: NodeId,
        id: &str,
        peer: NodeId,
        timeout: Duration,
        max: usize,
    ) -> Result<ScanItems, GolemError> {
        let id = id.to_string();
        self.ask(ScanPeer {
            owner,
            id,
            peer,
            timeout,
            max,
        })
        .await
    }

    /// `DELETE /scan/{id}`.
    pub async fn end_scan(&self, owner: NodeId, id: &str) -> Result<(), GolemError> {
        let id = id.to_string();
        self.ask(EndScan { owner, id }).await
    }
}

impl MarketActor {
    /// `POST /scan`: a new iterator owned by `owner`.
    fn begin_scan(&mut self, owner: NodeId, body: NewScan) -> Result<String, GolemError> {
        let idle_secs = body.timeout.unwrap_or(DEFAULT_IDLE_SECS);
        if !(1..=MAX_IDLE_SECS).contains(&idle_secs) {
            return Err(GolemError::bad_request(format!(
                "timeout must be between 1 and {MAX_IDLE_SECS} seconds, got {idle_secs}"
            )));
        }
        let constraint = body
            .constraints
            .as_deref()
            .map(parse_constraint)
            .transpose()?;
        let current = now();
        let idle = chrono::Duration::seconds(idle_secs as i64);
        let id = new_id();
        {
            let scans = &mut self.scans;
            scans.sweep(current);
            if scans.live.len() >= MAX_LIVE_SCANS {
                return Err(GolemError::unavailable(format!(
                    "this node already has {MAX_LIVE_SCANS} scan iterators; end some with DELETE /scan/{{id}}"
                )));
            }
            let compiled = match (&constraint, body.scan_type) {
                (Some(constraint), ScanType::Offer) => Some(CompiledConstraint::compile(
                    constraint,
                    &mut self.state.keys,
                )),
                _ => None,
            };
            scans.live.insert(
                id.clone(),
                ScanIterator {
                    owner,
                    scan_type: body.scan_type,
                    constraint,
                    compiled,
                    after: 0,
                    idle,
                    expires: current + idle,
                    peers: HashMap::new(),
                },
            );
        }
        tracing::info!(scan_id = %id, scan_type = ?body.scan_type, idle_secs, "scan iterator created");
        Ok(id)
    }

    fn next_scan_items(&mut self, message: NextScanItems) -> Result<ScanItems, GolemError> {
        let current = now();
        let State {
            offers,
            offer_arrivals,
            demands,
            demand_arrivals,
            ..
        } = &self.state;
        let scan = self.scans.live_mut(message.owner, &message.id, current)?;
        scan.touch(current, message.hold);
        let max = message.max;
        Ok(match scan.scan_type {
            ScanType::Offer => {
                ScanItems::Offers(scan.next_offers(offers, offer_arrivals, current, max))
            }
            ScanType::Demand => {
                ScanItems::Demands(scan.next_demands(demands, demand_arrivals, current, max))
            }
        })
    }

    /// Queued offers of the peer, if any; `None` when they must be fetched.
    fn queued_peer_offers(&mut self, message: &ScanPeer) -> Result<Option<ScanItems>, GolemError> {
        let scan = self.scans.live_mut(message.owner, &message.id, now())?;
        if scan.scan_type != ScanType::Offer {
            return Err(GolemError::bad_request(
                "peerId applies to offer scans only (demands never leave their node)",
            ));
        }
        scan.touch(now(), message.timeout);
        let queued = scan.peers.entry(message.peer).or_default();
        if !queued.pending.is_empty() || message.max == 0 {
            return Ok(Some(ScanItems::Offers(queued.take(message.max))));
        }
        Ok(None)
    }

    /// Queue the offers `peer` sent (each once), and take the next page.
    fn queue_peer_offers(
        &mut self,
        message: &ScanPeer,
        fetched: OfferBroadcast,
    ) -> Result<ScanItems, GolemError> {
        let current = now();
        let peer = message.peer;
        let scan = self.scans.live_mut(message.owner, &message.id, current)?;
        let ScanIterator {
            constraint, peers, ..
        } = scan;
        let queued = peers.entry(peer).or_default();
        // A peer answers with what it likes: keep no more than the market
        // would hold of one node.
        let most = self.core.config.limits.max_offers_per_node;
        for published in fetched.offers {
            if queued.seen.len() >= most {
                tracing::debug!(%peer, most, "offers of a peer beyond market.max-offers-per-node left out of the scan");
                break;
            }
            let offer = published.offer;
            if offer.provider_id != peer
                || published.expiration <= current
                || queued.seen.contains(&offer.offer_id)
                || constraint
                    .as_ref()
                    .is_some_and(|constraint| !constraint.matches(&offer.properties))
            {
                continue;
            }
            queued.seen.insert(offer.offer_id.clone());
            queued.pending.push_back(offer);
        }
        Ok(ScanItems::Offers(queued.take(message.max)))
    }
}

impl Handler<BeginScan> for MarketActor {
    type Result = Result<String, GolemError>;

    fn handle(&mut self, message: BeginScan, _ctx: &mut Context<Self>) -> Self::Result {
        self.begin_scan(message.owner, message.body)
    }
}

impl Handler<NextScanItems> for MarketActor {
    type Result = Result<ScanItems, GolemError>;

    fn handle(&mut self, message: NextScanItems, _ctx: &mut Context<Self>) -> Self::Result {
        self.next_scan_items(message)
    }
}

impl Handler<ScanPeer> for MarketActor {
    type Result = ResponseActFuture<Self, Result<ScanItems, GolemError>>;

    /// Queued offers at once; otherwise ask the peer (ourselves: our own
    /// offers) and queue its answer when it comes.
    fn handle(&mut self, message: ScanPeer, _ctx: &mut Context<Self>) -> Self::Result {
        match self.queued_peer_offers(&message) {
            Ok(Some(items)) => return Box::pin(actix::fut::ready(Ok(items))),
            Ok(None) => {}
            Err(error) => return Box::pin(actix::fut::ready(Err(error))),
        }
        let peer = message.peer;
        if peer == self.core.node_id {
            let own = own_offers(&self.state, None, None);
            return Box::pin(actix::fut::ready(self.queue_peer_offers(&message, own)));
        }
        let bound = if message.timeout.is_zero() {
            self.core.config.remote_timeout
        } else {
            message.timeout
        };
        let call = self.core.call_remote(peer, GetOwnOffers {});
        let fetch = async move {
            tokio::time::timeout(bound, call).await.map_err(|_| {
                GolemError::timeout(format!(
                    "node {peer} did not send its offers within {bound:?}"
                ))
            })?
        };
        Box::pin(actix::fut::wrap_future(fetch).map(
            move |fetched, actor: &mut MarketActor, _ctx| {
                actor.queue_peer_offers(&message, fetched?)
            },
        ))
    }
}

impl Handler<EndScan> for MarketActor {
    type Result = Result<(), GolemError>;

    fn handle(&mut self, message: EndScan, _ctx: &mut Context<Self>) -> Self::Result {
        self.scans.end(message.owner, &message.id, now())?;
        // Wake a long-poll on this iterator so it answers 404 at once.
        self.core.signals.bump_catalogue();
        tracing::info!(scan_id = %message.id, "scan iterator deleted");
        Ok(())
    }
}
